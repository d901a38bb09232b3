# Sourced by install.package (check_package.sh) and install.prefix
# (check_prefix.sh), which both build README's client example as an
# outside project would. The caller defines fail().

# readme_block README NAME FILE: the code of README's <!-- NAME:begin -->
# .. <!-- NAME:end --> block, without the markers and the fence lines.
readme_block() {
    sed -n "/<!-- $2:begin -->/,/<!-- $2:end -->/p" "$1" |
        sed '1,2d;$d' | sed '$d' > "$3"
    [ -s "$3" ] || fail "README has no $2 block"
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
