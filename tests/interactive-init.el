;;; interactive-init.el --- Set up an interactive Emacs for test_interactive.py  -*- lexical-binding: t; -*-

;;; Commentary:

;; Loaded by `emacs -nw -Q' under tmux: enables chat-ai blocks with the
;; helper named by $CHAT_AI_TEST_HELPER, without confirmation prompts.

;;; Code:

(setq inhibit-startup-screen t)
(require 'ob-chat-ai)
(org-babel-do-load-languages 'org-babel-load-languages
                             '((emacs-lisp . t) (chat-ai . t)))
(setq org-confirm-babel-evaluate nil
      ob-chat-ai-helper-command (list (getenv "CHAT_AI_TEST_HELPER") "--serve"))

;;; interactive-init.el ends here
