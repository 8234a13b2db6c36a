NAME = "notebook"
TITLE = "notebook"


def run(ctx):
    return []
