from aimass.cli import app

app(prog_name="aimass")
