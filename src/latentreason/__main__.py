from latentreason.cli import main

main()
