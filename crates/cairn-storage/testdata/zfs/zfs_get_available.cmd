zfs get available -o value -Hp tank/linstor
