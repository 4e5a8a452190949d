"""The pure decision: ``evaluate(object, context, policies) -> Decision``.

No HTTP, no cluster calls, no flask/gunicorn/kubernetes/prometheus imports (an import-linter contract
in pyproject.toml holds it). The server, the audit, the CLI and the policy tests all call ``evaluate``.
"""
