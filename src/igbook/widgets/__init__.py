"""Interactive explorers for the book, built from pure update functions.

Each explorer has three layers, so that it can be tested without a browser and read on a
static website:

1. a pure ``*_state(...)`` function that computes everything a frame shows (tested);
2. a ``draw_*`` function that renders a state into matplotlib axes (also the static figure);
3. an ``*Explorer`` class that wires ipywidgets controls to 1 and 2 (needs a kernel), and an
   ``animate_*`` function that pre-renders a scrubbable JavaScript animation for the website.
"""
