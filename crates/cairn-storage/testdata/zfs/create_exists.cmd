zfs create -V 65536KB -o cairn:vid=0a1b2c3d4e5f tank/linstor/web_00000
