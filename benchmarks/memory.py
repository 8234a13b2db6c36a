NAME = "memory"
TITLE = "memory"


def run(ctx):
    return []
