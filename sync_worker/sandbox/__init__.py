"""Local servers speaking the documented HubSpot, Pipedrive and LaGrowthMachine wire formats.

Used by the demo, the end-to-end tests, fault tests and benchmarks. Shared pieces live in
:mod:`sync_worker.sandbox.common`; one module (or package) per provider.
"""

__all__: list[str] = []
