"""The stream adapters: the Faust app, its agents and tables, the outputs, the catalog and
model followers, the worker and its supervisor. Thin: the work is done by ``app.core``."""
