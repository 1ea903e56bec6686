"""API routes. Each audience adds its own module of views to the `api` blueprint."""
