"""The aiohttp pieces every hal0 server shares (the API and the runners): request helpers and
the request-id and error middlewares. They need nothing but aiohttp and hal0.errors, so this
package sits below every layer that serves HTTP."""
