"""The reviewers' web app, the verdict store and label export. Never runs the CNN in a request."""
