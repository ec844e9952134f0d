"""The local web explorer (``llm-profiler ui``) and the static single-file HTML report (``ui --html FILE``).

Standard library only: ``server`` is a threading ``http.server`` on 127.0.0.1 with a JSON API (``api``), and
the page (``static/``: one HTML file, one script that draws its charts as SVG, one style sheet) is bundled in
the package, so the explorer works offline. See docs/ui.md.
"""
