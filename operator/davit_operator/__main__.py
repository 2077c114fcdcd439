from davit_operator.main import main

raise SystemExit(main())
