zfs send -i tank/send/inc_00000@base tank/send/inc_00000@next
