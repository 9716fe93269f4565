"""Protocol engines: each turns one successful sign-in into one `Identity`.

Nothing in this package imports `aiohttp.web`; pysaml2 and joserfc objects
never leave it.
"""
