"""Declarative pools and scanners: the YAML schema, its loader and its exporter (DESIGN §9)."""

from scanners.config.exporter import export_yaml, secret_variable
from scanners.config.loader import Plan, build_plan, load_config, parse_config, read_config
from scanners.config.schema import PoolSpec, ScannerConfig, ScannerSpec, format_duration, parse_duration
from scanners.config.source import ConfigError, Problem

__all__ = [
    "ConfigError",
    "Plan",
    "PoolSpec",
    "Problem",
    "ScannerConfig",
    "ScannerSpec",
    "build_plan",
    "export_yaml",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "read_config",
    "secret_variable",
]
