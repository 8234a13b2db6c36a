NAME = "first_token"
TITLE = "first_token"


def run(ctx):
    return []
