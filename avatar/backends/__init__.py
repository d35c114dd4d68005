"""One module per engine. Heavy engines are imported lazily by the module that uses them."""
