"""The command line, `python -m ivr`: one context module (`with_app`, times) and one module
per command group, all registered by `main`."""
