from director.cli.main import main

main()
