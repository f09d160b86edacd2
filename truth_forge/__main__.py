from truth_forge.cli import app

app()
