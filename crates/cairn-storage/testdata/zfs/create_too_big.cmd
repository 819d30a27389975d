zfs create -V 104857600KB -o cairn:vid=0123 tank/linstor/huge_00000
