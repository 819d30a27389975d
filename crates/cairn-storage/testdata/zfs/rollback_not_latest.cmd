sh -c 'zfs snapshot tank/linstor/db_00000@snap2 && zfs rollback tank/linstor/db_00000@snap1; rc=$?; zfs destroy tank/linstor/db_00000@snap2; exit $rc'
