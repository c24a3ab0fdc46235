"""Ready-made vertical applications built on slm bundles, each a plugin in its own folder.

``<name>/plugin.py`` declares the app (:class:`slm.plugins.AppPlugin`, entry point ``slm.apps``);
``<name>/cli.py`` holds its ``slm app <name>`` commands, ``<name>/server.py`` and ``<name>/routes.py``
its side of ``slm serve``. The apps never import one another: shared code lives in :mod:`slm.apps.common`.
"""
