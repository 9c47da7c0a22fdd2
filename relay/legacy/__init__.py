"""The routes existing image-app front ends already call (`RELAY_LEGACY_ROUTES=on`):
thin translations onto the same create, read, stream, upload and storage paths, so a
front end moves to Relay by changing one base URL.

browser.py: who a token-less front end is (a signed HttpOnly cookie); shapes.py: the
answers those front ends read; routes.py: the routes; shares.py: shares and share pages.
"""
