"""Results pipeline: parse .nessus exports once, judge authentication, summarise, serve pages (docs/results.md)."""
