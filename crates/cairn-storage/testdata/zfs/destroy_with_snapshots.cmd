zfs destroy tank/linstor/db_00000
