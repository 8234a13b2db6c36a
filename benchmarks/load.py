NAME = "load"
TITLE = "load"


def run(ctx):
    return []
