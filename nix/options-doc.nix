# The options table of docs/nixos.md, rendered from the module's own option declarations with
# lib.optionAttrSetToDocList (what nixpkgs' nixosOptionsDoc builds on), so the page cannot drift
# from the module: nix/tests/eval-module.sh and the flake check `options-doc` compare the two.
#   import ./options-doc.nix { inherit lib; options = config-evaluation.options.services.cc-ci; }
{ lib, options }:
let
  # One line in a table cell: no pipes, no line breaks.
  cell = text: lib.replaceStrings [ "|" "\n" ] [ "\\|" " " ] (lib.trim text);
  code = text: "`${cell text}`";
  # A default in prose (literalMD) reads as prose; an expression as code.
  default = o:
    if !(o ? default) then "required"
    else if (o.default._type or "") == "literalMD" then cell o.default.text
    else code o.default.text;
  description = o: if o.description == null then "" else cell o.description;
  # `settings` is freeform: its type is named by what it is, not by the format's value type
  # (which a stand-in for nixpkgs names differently).
  type = o: if o.name == "services.cc-ci.settings" then "TOML (RFC 42 settings)" else cell o.type;
  row = o: "| ${code (lib.removePrefix "services.cc-ci." o.name)} | ${type o} | ${default o} | ${description o} |";
  shown = lib.filter (o: o.visible && !o.internal) (lib.optionAttrSetToDocList options);
in
lib.concatStringsSep "\n" ([
  "| option | type | default | meaning |"
  "| --- | --- | --- | --- |"
] ++ map row shown) + "\n"
