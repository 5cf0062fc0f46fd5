"""Renderers: turn :class:`~layersal.Explanation` objects into something to look at."""
