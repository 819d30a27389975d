zfs set volsize=104857600KB tank/linstor/web_00000
