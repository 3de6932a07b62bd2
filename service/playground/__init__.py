"""The playground's static files (page, script, styles, example series), served by
service/routes/playground.py. No Python runs here: the page talks to the public API."""
