"""The Memorose ops dashboard: static ES-module pages plus the small HTTP side that both the
node and the gateway mount at ``/dashboard`` (sign-in, session cookie, API proxy).

It imports only aiohttp and the standard library, so ``node`` and ``gateway`` can both use it
without importing each other (docs/dashboard.md).
"""
