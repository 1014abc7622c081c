"""A snapshot in, a picture or a sentence out: Plotly figures (pure functions), captions computed from the same
numbers, static SVG for viewers, the self-contained web page. May import every wing below it, up to ``live``."""
