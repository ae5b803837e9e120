from crawlkeeper.cli import main

main()
