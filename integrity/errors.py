"""Errors of the application core (use cases that cross domains), under one base class."""

from __future__ import annotations


class IntegrityError(Exception):
    """Base of every error raised by ``integrity``."""


class ConfigurationError(IntegrityError):
    """Settings or key material are unusable; the service must not start."""


class DemoKeysRefused(ConfigurationError):
    """The demonstration PKI was found but demo mode is off."""
