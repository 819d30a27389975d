zpool get size -Hp tank
