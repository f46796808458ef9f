// Compiled only to build the unit tests' shared precompiled header (tests/CMakeLists.txt).
