zfs destroy tank/linstor/db_00000@snap1
