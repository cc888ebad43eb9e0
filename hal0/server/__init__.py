"""The HTTP server: application, middlewares, routes and the serve loop."""
