from davit_router.cli import main

main()
