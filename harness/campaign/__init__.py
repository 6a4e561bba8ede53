"""Campaigns: a matrix of test specs, each cell with what it is expected to
find, run as ordinary ``faultline run`` folders and reported together
(``faultline campaign FILE.toml``).  spec -> runner -> record -> report."""
