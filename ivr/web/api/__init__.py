"""The JSON API for agents, auditors and other systems (bearer tokens).

`routes.init_app` attaches each audience's views to the `api` blueprint and registers it;
importing a module of this package runs none of the others."""
