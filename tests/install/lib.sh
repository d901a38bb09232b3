# Sourced by install.package (check_package.sh) and install.prefix
# (check_prefix.sh), which both build README's client example as an
# outside project would. The caller sets $src (the source dir) and fail().

# readme_block NAME FILE: the code of README.md's <!-- NAME:begin --> ..
# <!-- NAME:end --> block, without the markers and the fence lines.
readme_block() {
    sed -n "/<!-- $1:begin -->/,/<!-- $1:end -->/p" "$src/README.md" |
        sed '1,2d;$d' | sed '$d' > "$2"
    [ -s "$2" ] || fail "README has no $1 block"
}

# cmake_project DIR SOURCE TARGET: DIR holds a CMake project that builds
# SOURCE as `publish` with find_package(fidbus) and links TARGET.
cmake_project() {
    mkdir -p "$1"
    cp "$2" "$1/publish.c"
    cat > "$1/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.16)
project(publish C)
find_package(fidbus 0.1 REQUIRED)
add_executable(publish publish.c)
target_link_libraries(publish PRIVATE $3)
CM
}
