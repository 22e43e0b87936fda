"""A local ClinchPad (see :mod:`connectors.clinchpad.sandbox.state` for what it follows)."""

from connectors.clinchpad.sandbox.app import create_app
from connectors.clinchpad.sandbox.server import ClinchPadServer, clinchpad_sandbox
from connectors.clinchpad.sandbox.state import ClinchPadSandbox

__all__ = ["ClinchPadSandbox", "ClinchPadServer", "clinchpad_sandbox", "create_app"]
