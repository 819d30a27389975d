zfs list -r -H -p -o name,refer,volsize,type,volblocksize,origin,clones,cairn:vid,cairn:rb -t volume,snapshot tank/nonexist
