"""Operations: Prometheus metrics (computed at scrape time), health checks, the live dashboard's data."""
