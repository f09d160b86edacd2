from truth_forge.cli.main import app

app()
