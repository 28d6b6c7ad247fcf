"""The review app's routes, one router per area (included by :func:`review.app.create_app`).

- :mod:`review.routes.auth`: who is reviewing (the name form);
- :mod:`review.routes.queues`: the queue pages;
- :mod:`review.routes.sites`: one site's page and its verdicts;
- :mod:`review.routes.chip_images`: chip PNGs (the run's own, and those cut on demand);
- :mod:`review.routes.progress`: progress figures and the quick re-rank;
- :mod:`review.routes.run_map`: the map of the run (every site over a picture of the after scenes).

Access rules are not here: :mod:`review.guards` applies them to every route.
"""
