"""Privacy audit of a trained bundle: membership inference and canary exposure (``slm audit privacy``).

:mod:`slm.audit.membership` holds the attacks and their statistics, :mod:`slm.audit.canaries` plants
secrets in training data and measures their exposure, :mod:`slm.audit.privacy` runs both on a bundle
through the torch-free runtime, :mod:`slm.audit.report` writes the report. ``slm.api.audit_privacy``
is the entry point.
"""
