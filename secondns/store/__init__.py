"""What survives a restart: zone copies on disk (``storage``), the IXFR journal (``journal``)
and the master-file reader/writer (``zonefile``)."""
