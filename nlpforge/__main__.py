from nlpforge.cli.main import main

main()
