"""scanpool's MCP server: LLM agents run and read scans through the REST API (docs/mcp.md).

This package imports nothing from Django: it may run on another machine with only an API token.
"""
