"""HTTP layer: middlewares and handlers. The only package that imports aiohttp.web handlers."""
