// A shared library without SOFTLAB_PLUGIN(): loading it must fail, naming the file.
extern "C" int not_a_softlab_plugin() { return 1; }
